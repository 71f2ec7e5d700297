"""Page views of the browser UI, one module per area. Thin: parse, call a service or
selector, render."""
