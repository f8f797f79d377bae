"""``python -m fl_async ...`` is the same as the ``fl-async`` command."""

from fl_async.cli import main

if __name__ == "__main__":
    main()
