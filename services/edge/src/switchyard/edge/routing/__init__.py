"""Which adapters serve which model: the route table, where it comes from, and endpoint choice."""
