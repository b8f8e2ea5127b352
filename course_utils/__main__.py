"""``python -m course_utils ...``: see :mod:`course_utils.cli`."""

from .cli import main

raise SystemExit(main())
