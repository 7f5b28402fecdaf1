"""Notices to the owner (SMS, e-mail) through a durable outbox: nothing lost while a channel is down.

Import from the modules themselves (`notify.outbox`, `notify.notices`, ...): the package imports
nothing, so reading settings (which parse an SMTP URL with `notify.email`) never pulls in the rest.
"""
