"""Ship a registry version as a container and run it on Kubernetes.

- ``modelyard.deploy.context``: ``modelyard build``'s OCI build context (Dockerfile,
  lock, README, the verified package).
- ``modelyard.deploy.entrypoint``: the image's entrypoint (verify, record, size, serve).
- ``modelyard.deploy.kubernetes``: ``modelyard deploy kubernetes``'s manifests.

Beside ``modelyard.serving`` in the layers, and independent of it: the image runs the
server as the ``modelyard serve`` command.
"""

from __future__ import annotations
