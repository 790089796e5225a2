"""`make run`: the whole Switchyard stack on one machine, on simulated engines."""
