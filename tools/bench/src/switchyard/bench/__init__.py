"""`make bench`: the same load against the engine alone, Switchyard and LiteLLM, in one run.

`loadgen` sends the requests (aiohttp on uvloop, closed or open loop, streaming or not),
`stats` turns samples into figures, `procstats` meters the servers' CPU and memory,
`paths` starts each path (`litellm` its proxy), `scenarios` says what to run, `runner`
runs it, `report` and `plot` write the results.
"""
