"""Kubernetes adapters: training-job specs, their launcher, platform settings, render and submit.

``settings`` (the ``platform`` config section) is imported by ``sslops.config`` and imports
nothing heavy; the other modules import the kubernetes client, KFP or Helm only when used.
"""
