"""deploy/: the image, compose files, Kubernetes manifests and systemd units agree with the code they run.

The files are read (YAML with PyYAML, the Dockerfile and the units line by line), every
``runstream ...`` command line in them is parsed by the real click commands without
running them, and every ``RUNSTREAM_*`` setting they pass is read back through
:meth:`runstream.Settings.from_config`.  The Redis Cluster variants are also run: their
``redis-server`` arguments, cluster-create scripts and (Kubernetes) restart hook start
real nodes on loopback, and the compose file's collector and server run against them.

One module per subject; what several share is in one place: ``files.py`` reads every part
of deploy/, ``cluster.py`` the Redis Cluster variants, ``nodes.py`` runs nodes on loopback.
"""
