"""The pod runner's layers: a kubelet and a Job controller for the emulator.

See ``support.pod_runner``.

Each on the one before: state, volumes, containers, kubelet (one pod's run), jobs (the Job
controller), informer (the watches); beside them records, sessions (processes) and status (a
pod's status as a kubelet writes it). Tests import from :mod:`support.pod_runner`.
"""
