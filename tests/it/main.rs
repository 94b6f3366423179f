mod git_layer;
