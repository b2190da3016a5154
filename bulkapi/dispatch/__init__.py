"""Wake-ups and draining: broker set-up, the drain actor, the sweeper."""
