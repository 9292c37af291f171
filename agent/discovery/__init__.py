"""Discovery: Docker's container events and listings → the manager's start and stop calls.

- events.py: the events follower (subscribe, reconnect, resume where it left off);
- reconciler.py: listings, catch-up, and what each event does to a container;
- restart_rules.py: pure — which listed container gets a stream, from where;
- hand.py: a person's start and stop;
- own_container.py: the agent's own container, never collected.
"""
