"""A live dashboard in the browser: topology, modes, curves, bytes and events of a run.

``scatterbrained dashboard RUN_FOLDER`` serves it for any run (while or after it goes);
``--dashboard`` on ``demo``, ``simulate`` and ``node`` serves it from the same process.
The server needs the ``dashboard`` extra (``pip install 'scatterbrained[dashboard]'``,
aiohttp); :mod:`.feed` needs nothing beyond the package. See docs/dashboard.md.
"""

from __future__ import annotations

from .feed import Feed, find_run, follow_run

__all__ = ["Feed", "find_run", "follow_run"]
