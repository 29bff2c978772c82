"""Pipeline-parallel schedules: representation, generators, simulator, executor and timelines."""
