"""A connection's pending deliveries and its base_url, on both backends: what waits for another base URL
(found on the index of pending rows by URL, counted up to a cap), and moving them to a new one."""

from __future__ import annotations

from shipmap.connectors import Journal
from shipmap.connectors._store._moves import Stranded, count_pending, move_pending, stranded
from test_journal import pending


def test_what_waits_for_another_base_url_is_found_on_the_index_of_pending_urls(location: str) -> None:
    """Every run asks whether a connection's pending deliveries include some journaled for another base URL:
    a look of serve at parked work read the URL of each of a down connection's pending rows to find none
    (56 ms at 100,000 on SQLite, 85 ms on PostgreSQL, at every look). Now only the URLs before the base's
    range and after it are read, on the index of pending rows by URL; the bounds are exact in byte order
    (a base that another extends, /api and /api2; a URL past ASCII)."""
    base = "http://x.example/api"
    with Journal(location) as journal:
        for n, url in enumerate(
            [
                f"{base}/v1/orders/1",
                f"{base}/v1/é/2",  # within: past ASCII
                f"{base}/~",  # within: the last ASCII character
                "http://x.example/ap/3",  # before the base's range
                "http://x.example/api-v2/4",  # '-' sorts before '/': before
                "http://x.example/api2/5",  # after
                "http://x.example/api0",  # the range's end itself: after
            ]
        ):
            pending(journal, f"k{n}", url=url)
        pending(journal, "dg", url="http://elsewhere/x", connection="dg")
        [left] = stranded(journal, {"fenix": base, "dg": "http://elsewhere/"})
        assert left == Stranded("fenix", 4, "http://x.example/ap/3")
        assert count_pending(journal, "fenix", base + "/") == 3
        statements: list[tuple[str, tuple[object, ...]]] = []
        execute = journal._db.execute

        def recorded(sql: str, parameters: tuple[object, ...] = ()) -> object:
            statements.append((sql, parameters))
            return execute(sql, parameters)

        journal._db.execute = recorded  # type: ignore[method-assign]
        try:
            stranded(journal, {"fenix": base})
        finally:
            journal._db.execute = execute  # type: ignore[method-assign]
        [(sql, parameters)] = statements
        if journal.shared:  # PostgreSQL plans by its statistics: of a connection with rows enough to choose
            many = [(f"many{n}", "d" * 64, "m", "t", "fenix", None, "POST", f"{base}/{n}", "{}", None)
                    for n in range(2000)]  # fmt: skip
            journal.run_transaction(lambda: journal.mark_pending_many(many))
            execute("ANALYZE deliveries")
            plan = "\n".join(str(row[0]) for row in execute(f"EXPLAIN {sql}", parameters))
            assert plan.count("Index Only Scan using deliveries_pending_url") == 2, plan
            assert "Index Cond: ((connection = 'fenix'::text) AND (url < " in plan, plan
            assert "Index Cond: ((connection = 'fenix'::text) AND (url >= " in plan, plan
        else:
            plan = "\n".join(str(row[-1]) for row in execute(f"EXPLAIN QUERY PLAN {sql}", parameters))
            assert "USING COVERING INDEX deliveries_pending_url (state=? AND connection=? AND url<?)" in plan
            assert "USING COVERING INDEX deliveries_pending_url (state=? AND connection=? AND url>?)" in plan


def test_both_backends_move_a_connections_pending_deliveries_to_its_new_base_url(location: str) -> None:
    """A reload moved a connection: its pending deliveries journaled for the old base_url go to the new one,
    the rest of each URL kept; delivered ones, other connections' and other bases' stay as they are."""
    with Journal(location) as journal:
        pending(journal, "p1", url="http://old.example/api/v1/orders/1/created")
        pending(journal, "p2", url="http://old.example/api/v1/orders/2/created")
        pending(journal, "other", url="http://old.example/api/v1/orders/3/created", connection="dg")
        pending(journal, "elsewhere", url="http://older.example/api/v1/orders/4/created")
        pending(journal, "done", url="http://old.example/api/v1/orders/5/created")
        journal.mark_delivered("done", status=200, attempts=1)
        # Before: fenix's two under the old base and one under another are left behind by a move to the new.
        assert count_pending(journal, "fenix", "http://old.example/api") == 2
        assert stranded(
            journal, {"fenix": "https://new.example:8443/fenix/", "dg": "http://old.example/api"}
        ) == [
            Stranded("fenix", 3, "http://old.example/api/v1/orders/1/created")
        ]  # an example: the first by URL
        # Counted up to a cap, so a monitor's question stays cheap when an outage left millions.
        [capped] = stranded(journal, {"fenix": "https://new.example:8443/fenix/"}, cap=2)
        assert (capped.count, capped.capped, capped.describe()) == (2, True, "2 or more pending deliveries")
        assert (
            move_pending(journal, "fenix", "http://old.example/api/", "https://new.example:8443/fenix") == 2
        )
        assert stranded(journal, {"fenix": "https://new.example:8443/fenix"}) == [
            Stranded("fenix", 1, "http://older.example/api/v1/orders/4/created")
        ]
        urls = {
            key: entry.url
            for key in ("p1", "p2", "other", "elsewhere", "done")
            if (entry := journal.get(key))
        }
        assert urls == {
            "p1": "https://new.example:8443/fenix/v1/orders/1/created",
            "p2": "https://new.example:8443/fenix/v1/orders/2/created",
            "other": "http://old.example/api/v1/orders/3/created",
            "elsewhere": "http://older.example/api/v1/orders/4/created",
            "done": "http://old.example/api/v1/orders/5/created",
        }
        assert move_pending(journal, "fenix", "http://old.example/api", "https://x.example") == 0  # none left
        # A page at a time (here one row), and a new base that extends the old one moves each row once.
        assert (
            move_pending(
                journal,
                "fenix",
                "https://new.example:8443/fenix",
                "https://new.example:8443/fenix/v2",
                page=1,
            )
            == 2
        )
        assert journal.get("p1").url == "https://new.example:8443/fenix/v2/v1/orders/1/created"  # type: ignore[union-attr]
        assert journal.get("p2").url == "https://new.example:8443/fenix/v2/v1/orders/2/created"  # type: ignore[union-attr]
