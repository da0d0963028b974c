"""The demo apps, one per module, each served alone: ``nucleus serve examples.apps.chat:server``."""
