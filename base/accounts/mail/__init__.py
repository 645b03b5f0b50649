"""Account mail: verification, password reset and unlock links, sent over SMTP (`sender.py`);
in dev, captured by a local SMTP server whose mailbox is read over HTTP (`local_server.py`)."""
