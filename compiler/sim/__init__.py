"""The simulated hardware: PCM noise, the simulation graph, scoring and `hetmap run`."""
