"""What every Switchyard process uses: settings, logs, tracing, SSE, JSON Schema checks and
the uvicorn server."""
