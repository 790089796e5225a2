"""The Switchyard operator: ModelBackend resources become warm, correctly scheduled engine Deployments."""
