"""`python -m switchyard.enginesim.tgi --model-id M [flags]`: a simulated `text-generation-launcher`."""

from switchyard.enginesim.serving import serve
from switchyard.enginesim.tgi.flags import parse
from switchyard.enginesim.tgi.routes import create_app

if __name__ == "__main__":
    config = parse()
    # Like the launcher: nothing listens until the model is loaded and warmed up.
    delay = config.sim.latency.load_delay_s
    serve(
        create_app(config),
        config.hostname,
        config.port,
        delay_listen_s=delay,
        name=f"tgi-sim {config.model_id}",
    )
