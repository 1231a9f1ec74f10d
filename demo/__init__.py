"""The flask_sente demo: a realtime, multi-user todo list (``python -m demo``)."""
