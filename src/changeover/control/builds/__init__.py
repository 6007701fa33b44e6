"""control/builds."""
