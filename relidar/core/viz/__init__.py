"""Pictures of point clouds and labels (bird's-eye views), shared by every command that renders."""
