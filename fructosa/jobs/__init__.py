"""Slurm awareness: which jobs run on a node, job events on the head node,
and profiles of finished jobs read back from Graphite.

``discovery`` runs on compute nodes (for the SlurmJobs, GPU and
TopProcesses sensors); ``slurm`` wraps Slurm's client commands; ``events``
is the master's poller; ``report`` is ``fructosa-job-report``.
"""
