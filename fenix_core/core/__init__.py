"""The engine's machinery after the core redesign (issue 18); nothing here is
public. Today only the ports (the interfaces its parts meet at) exist."""
