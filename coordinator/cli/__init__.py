"""The ``convoy`` command line: job commands (``main``), cluster processes (``cluster``), the live view."""
