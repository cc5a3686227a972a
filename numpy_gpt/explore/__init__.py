"""See inside the model: a local web page that shows the learner's own model at work (``numpy-gpt explore``).

After chapter 5 a learner has a model of their own (``numpy-gpt pretrain``), after chapter 6 a classifier,
with the encoder an MLM; this page shows what happens inside any of them, computed by the same NumPy
code they read: the prompt as tokens, generation one step at a time with the probabilities of the next
token, the attention weights of any layer and head, the logit lens (what each layer would predict), a
classifier's class probabilities and an encoder's fill-mask candidates.

* ``explorer.py`` computes every view (``Explorer``), with the library's own functions;
* ``server.py`` serves the page and a small JSON API on the standard library's HTTP server;
* ``static/`` is the page: plain HTML, CSS and JavaScript that draw the numbers the server computed
  (nothing is computed again in the browser, nothing is loaded from the network).

    from numpy_gpt.explore import Explorer, make_server
    server = make_server(Explorer(model, tokenizer))      # 127.0.0.1, a free port
    print(server.url); server.serve_forever()
"""

from numpy_gpt.explore.explorer import ExploreError, Explorer
from numpy_gpt.explore.server import make_server

__all__ = ["ExploreError", "Explorer", "make_server"]
