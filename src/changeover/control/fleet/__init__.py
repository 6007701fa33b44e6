"""control/fleet: environments, applications, regions, profiles, fleets, hosts, instances."""
