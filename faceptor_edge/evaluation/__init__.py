"""Evaluation on real labelled faces: the sets (`realfaces`), the metrics (`accuracy`) and the
`faceptor-edge evaluate` report (`evaluate`)."""
