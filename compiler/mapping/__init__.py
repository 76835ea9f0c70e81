"""What runs where: the Mapping type, the cost model, the MILP solver."""
