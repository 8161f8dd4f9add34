"""HTTP glue over the services, as ``handlers`` is kopf glue: the broker run pods call, the local
run's channel on a Unix socket, and the metrics server. No rules live here: they are the
services'."""
