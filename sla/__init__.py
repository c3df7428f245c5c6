"""SLA timers, escalation, business calendars, surge and incident detection."""
