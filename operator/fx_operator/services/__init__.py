"""What to do for each kind and each request (a secret write, a resolution, a run, a rotation):
rules over the domain, I/O through storage; neither kopf nor HTTP (handlers and endpoints)."""
