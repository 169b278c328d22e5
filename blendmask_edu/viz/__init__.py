"""Pictures of what the model computed: overlays, bases, attentions, blended masks."""
