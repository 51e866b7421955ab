"""FrUCToSA: Frankfurt University Cluster Tool of Software Analysis.

LiMon's agent (``lagent``) measures a node with psutil sensors and streams
samples to the master (``lmaster``), which relays them to Graphite.
"""

__version__ = "1.0.0.dev0"
