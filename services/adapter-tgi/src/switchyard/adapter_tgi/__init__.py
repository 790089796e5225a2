"""The Switchyard adapter for tgi."""
