"""The run room: plan what to render, render it with an engine, record every job once."""
