"""Changes to a model's forward, each a diffusers `ModelHook` registered on the model's
`HookRegistry` under its own name and removed by that name (as diffusers' own hooks/ do): never a
replaced `forward` or a private attribute. One file per technique."""
