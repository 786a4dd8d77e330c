"""controller/api"""

from __future__ import annotations

import sys

# FastAPI imports `pydantic.v1` (23 modules, Cython's shadow module among
# them: 2.2 MB resident in the controller) only to refuse pydantic v1 models
# when it builds a route, and takes an ImportError as "not one". The API has
# none, so the controller does without it (issue 21); a process that already
# imported it keeps it.
sys.modules.setdefault("pydantic.v1", None)  # type: ignore[arg-type]
