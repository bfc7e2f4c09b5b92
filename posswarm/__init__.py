"""posswarm: signed POS images and store apps from central IT to every till, by store-local swarming."""
