"""Pure folds: no I/O, no clock, no logging. The shells that run them live in tracker.actors."""
