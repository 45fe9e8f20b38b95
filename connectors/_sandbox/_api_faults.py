"""Which fault plan answers which API: the plan for both (``--faults``, ``POST /_sandbox/faults``), or a plan
of an API's own (``--fenix-faults``, ``POST /_sandbox/faults?api=fenix``) that answers that API's requests
instead, until it is removed (``DELETE /_sandbox/faults?api=fenix``). So one sandbox can take Fenix down
while Digital Genius answers, as a user testing "one destination down" expects.

The plan for both is one play for both APIs: a schedule's steps go to Fenix and DG requests in arrival order,
as they did before plans per API existed. A plan of an API's own is a play of its own: its schedule, its
counts and its seed are that API's alone.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

from ._faults import DEFAULT_FAULT_IDENTITIES, FaultInjector, FaultPlan

Api = Literal["fenix", "dg"]
APIS: tuple[Api, ...] = ("fenix", "dg")
BOTH = "both"  # the name of the plan for both APIs, where stats and records say which plan answered


def api_named(text: str) -> Api:
    """``text`` as an API name, or ValueError naming the known ones."""
    for api in APIS:
        if text == api:
            return api
    raise ValueError(f"unknown api {text!r}; use {' or '.join(APIS)} (no api: the plan for both)")


class ApiFaults:
    """The plan for both APIs and the plans of an API's own. Thread-safe, as :class:`FaultInjector` is."""

    def __init__(
        self,
        both: FaultPlan | None = None,
        own: Mapping[Api, FaultPlan] | None = None,
        identities: int = DEFAULT_FAULT_IDENTITIES,
    ) -> None:
        """``identities``: each plan's cap on the request identities it remembers attempts of."""
        self._lock = threading.Lock()
        self._identities = identities
        self._both = FaultInjector(both, identities)
        self._own: dict[Api, FaultInjector] = {
            api: FaultInjector(plan, identities) for api, plan in (own or {}).items()
        }

    def answering(self, api: Api) -> tuple[str, FaultInjector]:
        """The name of the plan that answers ``api``'s requests (the api, or ``both``) and its injector."""
        with self._lock:
            own = self._own.get(api)
        return (api, own) if own is not None else (BOTH, self._both)

    def plan(self, api: Api | None = None) -> FaultPlan:
        """The plan that answers ``api``'s requests; without one, the plan for both."""
        return self._both.plan if api is None else self.answering(api)[1].plan

    def configure(self, plan: FaultPlan, api: Api | None = None) -> None:
        """Give ``api`` a plan of its own, started over. Without an api, ``plan`` is the plan for both and
        answers both again: the plans of an API's own are dropped."""
        with self._lock:
            if api is None:
                self._both.configure(plan)
                self._own = {}
            else:
                self._own = {**self._own, api: FaultInjector(plan, self._identities)}

    def remove(self, api: Api) -> None:
        """Drop ``api``'s own plan, if it has one: the plan for both answers its requests again, from where
        that plan stands (its schedule goes on; nothing is started over)."""
        with self._lock:
            self._own = {other: injector for other, injector in self._own.items() if other != api}

    def restart(self) -> None:
        """Every plan in force played again from its start (a reset)."""
        with self._lock:
            injectors = [self._both, *self._own.values()]
        for injector in injectors:
            injector.restart()

    def counts_by_plan(self) -> dict[str, dict[str, int]]:
        """What each plan in force injected: ``both`` always, an API's own plan when it has one."""
        with self._lock:
            plans = [(BOTH, self._both), *sorted(self._own.items())]
        return {name: injector.counts() for name, injector in plans}

    def counts(self) -> dict[str, int]:
        """What every plan in force injected, added up."""
        total: Counter[str] = Counter()
        for counts in self.counts_by_plan().values():
            total.update(counts)
        return dict(sorted(total.items()))

    def snapshot(self, api: Api | None = None) -> dict[str, Any]:
        """The snapshot of the plan that answers ``api`` (without one, of the plan for both), with ``for``,
        which plan it is, and ``answers``, the APIs whose requests it answers."""
        with self._lock:
            name, injector = (BOTH, self._both) if api is None else (api, self._own.get(api))
            if injector is None:
                name, injector = BOTH, self._both
            answers = [a for a in APIS if a not in self._own] if name == BOTH else [name]
        return {"for": name, "answers": answers, **injector.snapshot()}
