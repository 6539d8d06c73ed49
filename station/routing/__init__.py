"""Alert routing: rules that say who hears of which alert and how (a command, a webhook), with
cooldowns, rate limits, retries and escalation, and a record of every delivery attempt.

`rules` (what matches), `targets` (how a message leaves), `router` (the loop that ties them to
the alert log, with the limits and the retries).
"""
