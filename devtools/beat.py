"""`celery beat` with the schedule re-read every N seconds instead of every 300.

    python -m devtools.beat --resync 2 -A simtrix beat -l WARNING

For soak tests: django-celery-beat re-reads its whole schedule every five minutes, which is
where the tenant-aware scheduler once broke every tenant's delayed work (issue 11), and no test
suite waits five minutes for it.
"""

from __future__ import annotations

import sys
from typing import Any

from celery.bin.celery import main as celery_main
from celery.signals import beat_init


def main() -> None:
    args = sys.argv[1:]
    seconds = 300.0
    if args[:1] == ["--resync"]:
        seconds, args = float(args[1]), args[2:]

    @beat_init.connect(weak=False)
    def shorten(**kwargs: Any) -> None:
        # Read at every access of the scheduler's `schedule`; importable once Django is set up.
        from django_celery_beat import schedulers

        schedulers.SCHEDULE_SYNC_MAX_INTERVAL = seconds

    sys.argv = ["celery", *args]
    celery_main()


if __name__ == "__main__":
    main()
