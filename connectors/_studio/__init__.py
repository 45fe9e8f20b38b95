"""``shipmap studio``: a local web page to write a mapping against real samples and see the payloads live.

It serves one directory on 127.0.0.1 behind a random token, reads and writes nothing outside that directory,
and evaluates with the same engine as ``shipmap preview``. See docs/studio.md.
"""

from ._server import Studio

__all__ = ["Studio"]
