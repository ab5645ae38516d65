"""Changes to a model's forward, each a diffusers `ModelHook` registered on the model's
`HookRegistry` under its own name and removed by that name (as diffusers' own hooks/ do), or an
attention processor set on the layers it changes and replaced by the one it took over from: never a
replaced `forward` or a private attribute. One file per technique."""
