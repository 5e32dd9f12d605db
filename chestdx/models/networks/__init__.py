"""Networks, apart from the recipe configs that use them (recipes never import each other)."""
