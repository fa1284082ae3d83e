from tests.controllers.cluster import cluster, control_plane_server  # noqa: F401
