"""Reaching Redis: one client factory for direct, TLS, ACL and Sentinel connections
(``client.py``), their credentials (``auth.py``), and the errors after which edged reconnects
instead of giving up (``transient.py``)."""
