"""The TGI simulator: text-generation-inference 3.3's router, served from a CPU.

`python -m switchyard.enginesim.tgi --model-id M [flags]` takes `text-generation-launcher`'s
command line.
"""

VERSION = "3.3.5"
"""The TGI release this simulator answers as (`/info`, `system_fingerprint`)."""
