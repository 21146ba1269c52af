#!/usr/bin/env python
"""Django's command-line utility: ``python -m config.manage`` or ``python config/manage.py``."""

import os
import sys
from pathlib import Path


def main() -> None:
    """Run a management command of the service named by ``DJANGO_SETTINGS_MODULE``."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.orders")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    if not __package__:  # `python config/manage.py`: import `config` from the project root
        sys.path[0] = str(Path(__file__).resolve().parent.parent)
    main()
