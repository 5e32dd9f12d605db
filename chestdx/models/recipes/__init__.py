"""Built-in recipes; each module registers itself with `chestdx.models.registry`."""

from chestdx.models.recipes import ai_corona, cnn_bilstm, detl, dre_net, residual_attention  # noqa: F401
