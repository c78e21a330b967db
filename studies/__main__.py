"""``python -m studies`` is the ``simstudy`` command."""
from .cli import main

raise SystemExit(main())
