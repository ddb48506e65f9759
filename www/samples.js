// Sample questions for the demo and the benchmark. Each has one clearly best answer (`best`, an
// index into `candidates`), a few partially relevant ones and one off-topic one.

export const SAMPLES = [
  {
    id: "password-reset",
    label: "Account: resetting a password",
    question: "How do I reset my password?",
    best: 1,
    candidates: [
      "You can change your profile picture under Settings > Profile.",
      "To reset your password, click 'Forgot password' on the sign-in page, enter your email address and follow the reset link we send you.",
      "Passwords must be at least 12 characters long and include a number.",
      "If you are locked out after too many attempts, wait 15 minutes before signing in again.",
      "Our office is closed on public holidays.",
    ],
  },
  {
    id: "refund-policy",
    label: "Shop: refund policy",
    question: "Can I get a refund if I return an item I bought online?",
    best: 0,
    candidates: [
      "Yes. Items bought online can be returned within 30 days for a full refund to your original payment method, as long as they are unused and in their original packaging.",
      "We ship to most countries in Europe and North America.",
      "Gift cards cannot be exchanged for cash.",
      "Returns are handled by our customer service team.",
      "The new spring collection arrives in stores next week.",
    ],
  },
  {
    id: "travel-passport",
    label: "Travel: passport for a trip abroad",
    question: "Do I need a passport to travel from the United States to Canada by plane?",
    best: 2,
    candidates: [
      "Canada is the second largest country in the world by area.",
      "Many airlines allow one carry-on bag and one personal item.",
      "Yes. To fly from the United States to Canada you need a valid passport; US citizens do not need a visa for short visits, but other travellers may need an eTA.",
      "Driving across the border is possible with a passport card.",
      "Sourdough bread needs a starter made of flour and water.",
    ],
  },
  {
    id: "cooking-pasta",
    label: "Cooking: boiling pasta",
    question: "How long should I boil dried spaghetti?",
    best: 3,
    candidates: [
      "Fresh pasta is made with eggs and flour.",
      "Spaghetti originated in Italy and is popular worldwide.",
      "Salt the water generously before adding the pasta.",
      "Boil dried spaghetti in plenty of salted water for about 8 to 12 minutes, tasting it a minute before the time on the package until it is al dente.",
      "To update your billing address, open the Account page.",
    ],
  },
  {
    id: "programming-python",
    label: "Programming: reading a file in Python",
    question: "How do I read a text file line by line in Python?",
    best: 0,
    candidates: [
      "Open the file with `with open('data.txt') as f:` and loop over it with `for line in f:`; each iteration gives you one line, and the file is closed automatically.",
      "Python is a popular programming language created by Guido van Rossum.",
      "Use `json.load` to parse a JSON file.",
      "Text files can use different encodings such as UTF-8 or Latin-1.",
      "The Eiffel Tower is about 330 metres tall.",
    ],
  },
  {
    id: "health-sleep",
    label: "Health: how much sleep adults need",
    question: "How many hours of sleep does an adult need each night?",
    best: 1,
    candidates: [
      "Caffeine can stay in your body for several hours.",
      "Most adults need between 7 and 9 hours of sleep each night; regularly sleeping less than 7 hours is linked to poorer health.",
      "Children and teenagers need more sleep than adults.",
      "A dark, quiet bedroom can help you fall asleep.",
      "Our support line is open from 9 am to 5 pm on weekdays.",
    ],
  },
  {
    id: "product-battery",
    label: "Product: extending laptop battery life",
    question: "How can I make my laptop battery last longer?",
    best: 4,
    candidates: [
      "Laptops come in many sizes, from 13 to 17 inches.",
      "Batteries wear out over time and hold less charge.",
      "You can buy a replacement charger from our online store.",
      "Lithium is a soft, silvery metal.",
      "To make your laptop battery last longer, lower the screen brightness, turn on battery saver mode, close apps you are not using and turn off Bluetooth when you do not need it.",
    ],
  },
  {
    id: "knowledge-photosynthesis",
    label: "General knowledge: photosynthesis",
    question: "What is photosynthesis?",
    best: 2,
    candidates: [
      "Plants need water and sunlight to grow.",
      "Chlorophyll makes leaves look green.",
      "Photosynthesis is the process by which plants, algae and some bacteria use sunlight, water and carbon dioxide to make glucose and release oxygen.",
      "The mitochondria produce energy in animal cells.",
      "To cancel your subscription, go to Billing and choose Cancel plan.",
    ],
  },
];

/** All candidate answers across the samples, in a stable order. */
export function allAnswers() {
  return SAMPLES.flatMap((sample) => sample.candidates);
}

/**
 * `count` real-ish candidate texts: the sample answers, cycled, with a light variation on each
 * repeat so no two candidates are identical.
 */
export function candidatePool(count) {
  const answers = allAnswers();
  const prefixes = ["", "In short: ", "Good question. ", "As far as I know, ", "Update: ", "Note that "];
  const out = [];
  for (let i = 0; i < count; i++) {
    const round = Math.floor(i / answers.length);
    const prefix = prefixes[round % prefixes.length];
    const suffix = round >= prefixes.length ? ` (#${round})` : "";
    out.push(prefix + answers[i % answers.length] + suffix);
  }
  return out;
}
