"""Bridges from other training frameworks to :class:`cskd_viz.Monitor`.

- :mod:`cskd_viz.integrations.lightning`: ``CSKDMonitorCallback``, a Lightning ``Callback``
  (``pip install "cskd-viz[lightning]"``).

A plain PyTorch loop needs no bridge: call ``Monitor.log_step`` yourself (``docs/own_loop.md``).
"""
